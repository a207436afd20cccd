//! The Temporal dev server's dynamic config (`temporal/dev-server.dynamic-config`), compiled in so
//! `sigma dev` and the test kit start the server exactly as the scripts do.

const DYNAMIC_CONFIG: &str = include_str!("../../temporal/dev-server.dynamic-config");

/// `--dynamic-config-value KEY=VALUE` for each setting of the file.
pub fn dynamic_config_args() -> Vec<String> {
    DYNAMIC_CONFIG
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .flat_map(|line| ["--dynamic-config-value".to_owned(), line.to_owned()])
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_is_a_key_and_a_json_value() {
        let args = super::dynamic_config_args();
        assert!(args.len() >= 2 && args.len().is_multiple_of(2));
        for pair in args.chunks(2) {
            assert_eq!(pair[0], "--dynamic-config-value");
            let (key, value) = pair[1].split_once('=').expect("KEY=VALUE");
            assert!(key.contains('.') && !key.contains(' '), "{key}");
            serde_json::from_str::<serde_json::Value>(value).expect("a JSON value");
        }
        assert!(
            args.iter()
                .any(|a| a.starts_with("history.transferProcessorMaxPollRPS="))
        );
    }
}
