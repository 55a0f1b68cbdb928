//! Runs every C37.118.1 compliance test on every class and reporting rate and prints the result
//! tables of docs/pmu-compliance.md (markdown) to stdout: the measured worst case next to each
//! limit.
//!
//! Run: `cargo run --release -p edgeward-measurement --example pmu_compliance [FS]` (10 kHz when
//! FS is not given).

use edgeward_measurement::estimator::compliance::{check, Outcome, Setup, Test};
use edgeward_measurement::estimator::Class;

fn limit(value: Option<f64>, scale: f64, digits: usize) -> String {
    value.map_or("none".into(), |limit| format!("{:.digits$}", limit * scale))
}

fn main() {
    let fs = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10_000);
    let setups = Setup::all(fs);
    let mut failures = 0;

    println!("### Reporting latency\n");
    println!("| class | f0 Hz | fps | window half (latency) ms | limit ms |");
    println!("|---|---|---|---|---|");
    for setup in &setups {
        let limit = match setup.class {
            Class::P => 2.0,
            Class::M => 5.0,
        } / f64::from(setup.rate);
        let latency = setup.config().window_latency();
        if latency > limit {
            failures += 1;
        }
        println!(
            "| {} | {} | {} | {:.1} | {:.1} |",
            setup.class,
            setup.nominal.hertz(),
            setup.rate,
            latency * 1e3,
            limit * 1e3
        );
    }

    for test in Test::ALL {
        println!("\n### {test}\n");
        let step = matches!(test, Test::MagnitudeStep | Test::PhaseStep);
        if step {
            println!("| class | f0 Hz | fps | TVE response ms (limit) | delay ms (limit) | overshoot % (limit) | FE response ms (limit) | RFE response ms (limit) | pass |");
            println!("|---|---|---|---|---|---|---|---|---|");
        } else {
            println!("| class | f0 Hz | fps | TVE % (limit) | FE mHz (limit) | RFE Hz/s (limit) | pass |");
            println!("|---|---|---|---|---|---|---|");
        }
        for setup in &setups {
            let outcome = check(setup, test);
            if !outcome.passes() {
                failures += 1;
            }
            let row = match outcome {
                Outcome::Steady { errors, limits } => format!(
                    "{:.4} ({}) | {:.3} ({}) | {:.4} ({})",
                    errors.tve * 100.0,
                    limit(limits.tve, 100.0, 1),
                    errors.fe * 1000.0,
                    limit(limits.fe, 1000.0, 0),
                    errors.rfe,
                    limit(limits.rfe, 1.0, 2),
                ),
                Outcome::Step { response, limits } => format!(
                    "{:.1} ({:.1}) | {:.2} ({:.2}) | {:.2} ({:.0}) | {:.1} ({:.1}) | {:.1} ({:.1})",
                    response.tve_response * 1e3,
                    limits.tve_response * 1e3,
                    response.delay * 1e3,
                    limits.delay * 1e3,
                    response.overshoot * 100.0,
                    limits.overshoot * 100.0,
                    response.fe_response * 1e3,
                    limits.fe_response * 1e3,
                    response.rfe_response * 1e3,
                    limits.rfe_response * 1e3,
                ),
                Outcome::NotRequired => "not required | | ".into(),
            };
            println!(
                "| {} | {} | {} | {row} | {} |",
                setup.class,
                setup.nominal.hertz(),
                setup.rate,
                if outcome.passes() { "yes" } else { "**no**" }
            );
        }
    }

    println!("\n### The standard's reference M-class window, out of band\n");
    println!("| f0 Hz | fps | TVE % (limit) | FE mHz (limit) | pass |");
    println!("|---|---|---|---|---|");
    for setup in setups.iter().filter(|setup| setup.class == Class::M) {
        let reference = Setup {
            reference_window: true,
            ..*setup
        };
        if let Outcome::Steady { errors, limits } = check(&reference, Test::OutOfBand) {
            println!(
                "| {} | {} | {:.4} ({}) | {:.3} ({}) | {} |",
                setup.nominal.hertz(),
                setup.rate,
                errors.tve * 100.0,
                limit(limits.tve, 100.0, 1),
                errors.fe * 1000.0,
                limit(limits.fe, 1000.0, 0),
                if errors.within(&limits) {
                    "yes"
                } else {
                    "**no**"
                }
            );
        }
    }
    if failures > 0 {
        eprintln!("{failures} setups fail a limit");
        std::process::exit(1);
    }
}
