//! Runs every C37.118.1 compliance test on every class and reporting rate and prints
//! docs/pmu-compliance.md's result tables (markdown) to stdout.
//!
//! Run: `cargo run --release -p edgeward-measurement --example pmu_compliance [FS]`.

use edgeward_measurement::estimator::compliance::{check, Outcome, Setup, Test};

fn main() {
    let fs = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10_000);
    println!(
        "| test | class | f0 | fps | TVE % (limit) | FE mHz (limit) | RFE Hz/s (limit) | pass |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for test in Test::ALL {
        for setup in Setup::all(fs) {
            let outcome = check(&setup, test);
            let row = match outcome {
                Outcome::Steady { errors, limits } => format!(
                    "{:.4} ({}) | {:.3} ({}) | {:.4} ({})",
                    errors.tve * 100.0,
                    limits.tve.map_or("–".into(), |l| format!("{}", l * 100.0)),
                    errors.fe * 1000.0,
                    limits.fe.map_or("–".into(), |l| format!("{}", l * 1000.0)),
                    errors.rfe,
                    limits.rfe.map_or("–".into(), |l| format!("{l:.3}")),
                ),
                Outcome::Step { response, limits } => format!(
                    "resp {:.1} ms ({:.1}) delay {:.2} ms ({:.2}) over {:.2} % ({}) | FE resp {:.1} ms ({:.1}) | RFE resp {:.1} ms ({:.1})",
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
                "| {test} | {} | {} | {} | {row} | {} |",
                setup.class,
                setup.nominal.hertz(),
                setup.rate,
                if outcome.passes() { "yes" } else { "**NO**" }
            );
        }
    }
}
