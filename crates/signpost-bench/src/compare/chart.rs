//! The report's chart: one SVG (plotters, SVG backend only: no font or system libraries), one
//! panel per headline figure, Signpost and etcd side by side as medians with min–max whiskers.

use std::path::Path;

use plotters::prelude::*;

use super::error::CompareError;
use super::suite::{Results, Stat};
use super::target::System;

/// One panel: a title, groups of (label, metric key), and an optional target line.
pub struct Panel {
    pub title: String,
    pub groups: Vec<(String, String)>,
    /// A horizontal line (value, label), e.g. the 50 ms watch target.
    pub target: Option<(f64, String)>,
}

const SIGNPOST: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ETCD: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Draws `panels` (two per row) into an SVG at `path`.
pub fn draw(
    path: &Path,
    title: &str,
    results: &Results,
    panels: &[Panel],
) -> Result<(), CompareError> {
    let rows = panels.len().div_ceil(2).max(1);
    let (w, h) = (1200u32, 60 + 360 * rows as u32);
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(CompareError::Chart)?;
    let (head, body) = root.split_vertically(60);
    head.draw(&Text::new(
        title.to_string(),
        (20, 12),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))
    .map_err(CompareError::Chart)?;
    for (i, (name, color)) in [("Signpost", SIGNPOST), ("etcd", ETCD)]
        .into_iter()
        .enumerate()
    {
        let x = 820 + 170 * i as i32;
        head.draw(&Rectangle::new([(x, 18), (x + 18, 34)], color.filled()))
            .map_err(CompareError::Chart)?;
        head.draw(&Text::new(
            name,
            (x + 26, 19),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))
        .map_err(CompareError::Chart)?;
    }
    let areas = body.split_evenly((rows, 2));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(area, results, panel)?;
    }
    root.present().map_err(CompareError::Chart)?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    results: &Results,
    panel: &Panel,
) -> Result<(), CompareError> {
    let stats: Vec<[Option<Stat>; 2]> = panel
        .groups
        .iter()
        .map(|(_, key)| System::ALL.map(|s| results.stat(key, s)))
        .collect();
    let top = stats
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.max)
        .chain(panel.target.as_ref().map(|t| t.0))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.18 } else { 1.0 };
    let n = panel.groups.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(CompareError::Chart)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(CompareError::Chart)?;
    for (g, st) in stats.iter().enumerate() {
        for (k, (stat, color)) in st.iter().zip([SIGNPOST, ETCD]).enumerate() {
            let Some(s) = stat else { continue };
            let x0 = g as f64 + 0.12 + 0.39 * k as f64;
            let x1 = x0 + 0.37;
            chart
                .draw_series([Rectangle::new([(x0, 0.0), (x1, s.median)], color.filled())])
                .map_err(CompareError::Chart)?;
            if s.n > 1 && s.max > s.min {
                let xm = (x0 + x1) / 2.0;
                chart
                    .draw_series([PathElement::new(
                        vec![(xm, s.min), (xm, s.max)],
                        BLACK.stroke_width(2),
                    )])
                    .map_err(CompareError::Chart)?;
            }
            chart
                .draw_series([Text::new(
                    short(s.median),
                    ((x0 + x1) / 2.0, s.median.max(s.max) + top * 0.015),
                    ("sans-serif", 13).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )])
                .map_err(CompareError::Chart)?;
        }
    }
    if let Some((value, label)) = &panel.target {
        chart
            .draw_series([PathElement::new(
                vec![(0.0, *value), (n as f64, *value)],
                RED.stroke_width(2),
            )])
            .map_err(CompareError::Chart)?;
        chart
            .draw_series([Text::new(
                label.clone(),
                (0.02 * n as f64, *value + top * 0.01),
                ("sans-serif", 13).into_font().color(&RED),
            )])
            .map_err(CompareError::Chart)?;
    }
    // Group labels under the axis, in pixels.
    for (g, (label, _)) in panel.groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        area.draw(&Text::new(
            label.clone(),
            (px, py + 8),
            ("sans-serif", 14).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            ),
        ))
        .map_err(CompareError::Chart)?;
    }
    Ok(())
}

/// A number in at most 4 significant characters: 950, 9.5k, 14k, 1.2M, 0.42.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short(950.0), "950");
        assert_eq!(short(9_500.0), "9.5k");
        assert_eq!(short(14_200.0), "14k");
        assert_eq!(short(1_200_000.0), "1.2M");
        assert_eq!(short(0.42), "0.42");
        assert_eq!(short(0.0), "0");
    }

    #[test]
    fn draws_an_svg() {
        let mut r = Results::default();
        for (run, v) in [(1, 10.0), (2, 12.0), (3, 11.0)] {
            r.add("a", System::Signpost, run, v);
            r.add("a", System::Etcd, run, v / 2.0);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let panels = [Panel {
            title: "throughput".into(),
            groups: vec![("a".into(), "a".into()), ("none".into(), "b".into())],
            target: Some((8.0, "target".into())),
        }];
        draw(&path, "test", &r, &panels).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("throughput") && svg.contains("Signpost") && svg.contains("11"));
    }
}
