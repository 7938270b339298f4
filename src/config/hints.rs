//! "Did you mean" hints for misspelt keys, sections, variants and names.

/// Adds a "did you mean" hint to serde's unknown-field and unknown-variant messages.
pub(super) fn explain(message: &str) -> String {
    for marker in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = message.strip_prefix(marker)
            && let Some((bad, tail)) = rest.split_once('`')
        {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(bad, &expected);
            return format!("{message}{hint}");
        }
    }
    message.to_string()
}

pub(super) fn did_you_mean(bad: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(bad, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{GOOD, errors};

    #[test]
    fn a_typo_names_line_key_and_suggestion() {
        let text = GOOD.replace("sigma = 0.1", "sigam = 0.1");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = &errs[0];
        assert_eq!((e.line, e.key.as_str()), (16, "device[0].tag[0].sigam"));
        assert!(e.message.contains("did you mean `sigma`"), "{}", e.message);
        assert!(
            e.to_string()
                .starts_with("t.toml:16:1: device[0].tag[0].sigam:"),
            "{e}"
        );
    }
}
