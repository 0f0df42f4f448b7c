//! `vizflow plot`: the files it writes hold what they must (a PNG of the figure's size;
//! an SVG with the title, the axes in real units and the colour bar's unit), and bad
//! requests are named.

use std::path::Path;
use std::process::Command;

mod common;

fn vizflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vizflow"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn figures_hold_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::alpha_markout_partials(dir.path());
    let out = out.to_str().unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();

    let png = file("heat.png");
    let heatmap_of = |z| {
        [
            "plot",
            "heatmap",
            out,
            "--x",
            "alpha1_bin",
            "--y",
            "orderSide",
            "--z",
            z,
        ]
    };
    let heatmap = heatmap_of("mean_return_60");
    let output = vizflow(&[&heatmap[..], &["--min-count", "20", "-o", &png]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(
        (size(16), size(20)),
        (1100, 720),
        "the IHDR's width and height"
    );
    assert!(
        bytes.len() > 20_000,
        "a drawn figure, not a blank one: {} bytes",
        bytes.len()
    );

    let svg = file("heat.svg");
    let output = vizflow(&[&heatmap[..], &["-o", &svg]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    for expected in [
        "alpha_markout: mean_return_60 by alpha1_bin and orderSide",
        "2024-01-02 to 2024-01-03, 2 dates",
        "\nalpha1\n", // the bin axis in the source's units
        "\norderSide\n",
        "mean_return_60 (bp)", // the colour bar's unit
        "\n5e-4\n",
    ] {
        assert!(text.contains(expected), "the SVG lacks {expected:?}");
    }
    assert!(!text.contains("<script"), "a static figure: no script");

    // With --live, a date still open (its provisional partial) is merged and named.
    std::fs::copy(
        Path::new(out).join("20240102.parquet"),
        Path::new(out).join("20240104.live.parquet"),
    )
    .unwrap();
    let live_svg = file("live.svg");
    let output = vizflow(&[&heatmap[..], &["--live", "-o", &live_svg]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&live_svg).unwrap();
    assert!(
        text.contains("2024-01-02 to 2024-01-04, 3 dates (provisional: 2024-01-04)"),
        "the subtitle names the open date"
    );
    let output = vizflow(&[&heatmap[..], &["-o", &live_svg]].concat());
    assert!(output.status.success());
    let text = std::fs::read_to_string(&live_svg).unwrap();
    assert!(
        text.contains("2 dates") && !text.contains("provisional"),
        "without --live"
    );
    std::fs::remove_file(Path::new(out).join("20240104.live.parquet")).unwrap();

    let line = file("line.svg");
    let output = vizflow(&[
        "plot",
        "line",
        out,
        "--x",
        "alpha1_bin",
        "--y",
        "mean_return_60,vwap",
        "--color",
        "orderSide",
        "-o",
        &line,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&line).unwrap();
    assert!(
        text.contains("mean_return_60 (bp), orderSide = B") && text.contains("vwap, orderSide = S")
    );

    // The page: the SVG figure, a place under the pointer per group with its value and
    // count, the merged rows, and nothing to fetch.
    let html = file("heat.html");
    let output = vizflow(&[&heatmap[..], &["-o", &html]].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let groups = vizflow::reduce::reduce(
        Path::new(out),
        &vizflow::reduce::ReduceOptions {
            by: Some(vec!["alpha1_bin".into(), "orderSide".into()]),
            ..Default::default()
        },
    )
    .unwrap()
    .table
    .num_rows();
    assert_eq!(page.matches("data-text=\"alpha1 = ").count(), groups);
    assert!(page.contains("orderSide = B: mean_return_60 (bp) = "));
    assert!(page.contains("<script type=\"application/json\" id=\"rows\">[{"));
    assert!(page.contains("mean_return_60 by alpha1_bin and orderSide"));
    for fetching in ["src=", "href=", "<link", "https:", "url("] {
        assert!(
            !page.contains(fetching),
            "the page must load nothing: {fetching}"
        );
    }
    let http = page.matches("http://").count();
    assert_eq!(
        http,
        page.matches("http://www.w3.org/2000/svg").count(),
        "only SVG namespaces"
    );

    // Bad requests say what to do; nothing is left behind.
    let output = vizflow(&[&heatmap_of("nope")[..], &["-o", &file("x.png")]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("no metric 'nope'")
            && stderr.contains("mean_return_60"),
        "{stderr}"
    );
    let output = vizflow(&[&heatmap[..], &["-o", &file("x.jpg")]].concat());
    assert!(String::from_utf8_lossy(&output.stderr).contains("write a .png, .svg or .html file"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().starts_with('.')),
        "{left:?}"
    );
}
