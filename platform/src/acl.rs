//! The broker's access rules, as the platform's ACL syncer gives them to Mosquitto's dynamic
//! security plugin, written as a Mosquitto `acl_file` (decision 0016): default deny; readers
//! (the recorder, an operator's subscriber) read everything; a device, authenticated by its
//! certificate's CN as username, writes only under its own device level and the shared
//! proof, heartbeat and notification topics.

/// The `acl_file` text for `readers`, the identities that may read every topic.
pub fn mosquitto_acl(readers: &[&str]) -> String {
    let mut text = String::new();
    for reader in readers {
        text.push_str(&format!("user {reader}\ntopic read #\n\n"));
    }
    text.push_str(
        "pattern write data/measurements/+/%u/#\n\
         pattern write metadata/measurements/+/%u/#\n\
         pattern write signatures/+\n\
         pattern write heartbeats\n\
         pattern write notifications\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_write_their_own_topics_and_readers_read_all() {
        let acl = mosquitto_acl(&["recorder", "admin"]);
        assert!(acl.starts_with("user recorder\ntopic read #\n\nuser admin\ntopic read #\n"));
        assert!(acl.contains("pattern write data/measurements/+/%u/#\n"));
        assert!(!acl.contains("pattern read"), "devices read nothing");
    }
}
