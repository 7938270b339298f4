//! The station's files, compiled into the binary: no CDN, no files to install. Hand-written, no
//! third-party code: the charts are SVG drawn by `chart.js` (see the README for why).

pub const INDEX: &str = include_str!("assets/index.html");

const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/chart.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/i18n.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];

/// (content type, body) of an asset.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}

/// Bytes a first visit loads (the page and every asset), for the size test.
#[cfg(test)]
pub fn total_bytes() -> usize {
    INDEX.len() + FILES.iter().map(|(_, _, b)| b.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_load_stays_light() {
        assert!(
            super::total_bytes() < 300 * 1024,
            "{}",
            super::total_bytes()
        );
        assert!(super::get("app.js").is_some() && super::get("../x").is_none());
    }
}
