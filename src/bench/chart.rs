//! `bench --models --chart FILE.svg`: the table as a picture, for a README or
//! a slide, where a reader compares lengths faster than columns of figures.
//!
//! One panel per workload, a horizontal bar per model, the value written at
//! the end of each bar; a model that cannot run a workload gets a grey
//! `n/a` where its bar would be, so every panel lists the same models in the
//! same order and colour. The baselines (the kernel floors, the C servers)
//! are not bars but reference lines: each has a row of its own at the top
//! of the panel, where its value is written, and a dashed line from there
//! down through every bar, so a bar's end reads against it at a glance. Drawn with plotters' SVG backend into memory, then
//! written in one go: a half-written file never replaces a good one silently.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// Width of the picture, in pixels.
const WIDTH: u32 = 1280;
/// Height of one row of panels: four panels make a 1280 × 900 picture.
const PANEL_HEIGHT: u32 = 415;
/// Height of the title band above the panels.
const TITLE_BAND: u32 = 70;
/// Panels side by side; a workload more adds a row every second one.
const COLUMNS: usize = 2;
/// Room left of each panel for the model names.
const NAME_AREA: u32 = 90;
/// Room under each panel for the scale and its label.
const SCALE_AREA: u32 = 45;
/// Room on the right of the longest bar for its value.
const HEADROOM: f64 = 1.22;
/// One colour per model, in table order (Tableau 10: tells ten apart, also
/// for the commonest colour-vision deficiencies).
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];
/// Text that is not data: axes, n/a marks.
const MUTED: RGBColor = RGBColor(110, 110, 110);
/// One colour per reference line, in order: dark, so they stand out from
/// the bars' lighter colours.
const REF_PALETTE: [RGBColor; 5] = [
    RGBColor(30, 30, 30),
    RGBColor(140, 60, 20),
    RGBColor(30, 80, 150),
    RGBColor(20, 110, 60),
    RGBColor(120, 30, 110),
];
/// Dash and gap of a reference line, in pixels.
const DASH: (u32, u32) = (6, 4);

/// One bar: a model's figure, or the word that stands in for it.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub(crate) label: String,
    /// `Err("n/a")` and the like draw as that word in grey.
    pub(crate) value: std::result::Result<f64, String>,
}

/// One workload's panel.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub(crate) title: String,
    /// The scale's label, with the unit.
    pub(crate) unit: String,
    pub(crate) bars: Vec<Bar>,
    /// Baselines, drawn as reference lines above and through the bars.
    pub(crate) refs: Vec<Bar>,
}

/// Draws `panels` under a title and `subtitle` and writes the SVG to `path`.
pub(crate) fn write_svg(path: &Path, subtitle: &str, panels: &[Panel]) -> Result<()> {
    let svg = render(subtitle, panels)?;
    std::fs::write(path, svg).map_err(|e| Error::Chart(format!("writing {}: {e}", path.display())))
}

/// The SVG text of the chart.
pub(crate) fn render(subtitle: &str, panels: &[Panel]) -> Result<String> {
    let mut svg = String::new();
    {
        let rows = panels.len().div_ceil(COLUMNS).max(1);
        let height = TITLE_BAND + PANEL_HEIGHT * u32::try_from(rows).unwrap_or(1);
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let (head, body) = root.split_vertically(TITLE_BAND);
        head.draw(&Text::new(
            "netecho server models: cost per request, per MiB, per idle connection (shorter is better)",
            (20, 14),
            ("sans-serif", 24).into_font().style(FontStyle::Bold),
        ))
        .map_err(chart_error)?;
        head.draw(&Text::new(
            subtitle.to_string(),
            (20, 44),
            ("sans-serif", 15).into_font().color(&MUTED),
        ))
        .map_err(chart_error)?;
        for (area, panel) in body.split_evenly((rows, COLUMNS)).iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// One panel: the reference rows on top, then the bars, top to bottom in
/// the order given; each reference's dashed line runs from its row down
/// through the bars.
fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()> {
    let items: Vec<(&Bar, bool)> = panel
        .refs
        .iter()
        .map(|r| (r, true))
        .chain(panel.bars.iter().map(|b| (b, false)))
        .collect();
    let n = items.len().max(1);
    let values = items.iter().filter_map(|(b, _)| b.value.as_ref().ok());
    let finite: Vec<f64> = values.copied().filter(|v| v.is_finite()).collect();
    let hi = finite.iter().copied().fold(0.0, f64::max);
    let lo = finite.iter().copied().fold(0.0, f64::min);
    let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
    let x_max = if hi > 0.0 {
        hi + span * (HEADROOM - 1.0)
    } else {
        span * 0.25
    };
    let x_min = if lo < 0.0 { lo - span * 0.05 } else { 0.0 };
    let labels: Vec<&str> = items.iter().map(|(b, _)| b.label.as_str()).collect();
    // Row 0 is drawn at the top: segment i holds item n - 1 - i.
    let row_of = |i: usize| n - 1 - i;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(&panel.title, ("sans-serif", 17))
        .x_label_area_size(SCALE_AREA)
        .y_label_area_size(NAME_AREA)
        // A discrete range includes its end: 0..n-1 is n rows.
        .build_cartesian_2d(x_min..x_max, (0..n - 1).into_segmented())
        .map_err(chart_error)?;
    let name_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
            .get(n.wrapping_sub(1).wrapping_sub(*i))
            .map_or(String::new(), |s| s.to_string()),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .y_labels(n)
        .y_label_formatter(&name_of)
        .y_label_style(("sans-serif", 15))
        .x_labels(6)
        .x_label_formatter(&|v| scale(*v))
        .x_label_style(("sans-serif", 13).into_font().color(&MUTED))
        .x_desc(&panel.unit)
        .axis_desc_style(("sans-serif", 14).into_font().color(&MUTED))
        .draw()
        .map_err(chart_error)?;
    let (mut bar_no, mut ref_no) = (0, 0);
    for (i, (item, is_ref)) in items.iter().enumerate() {
        let row = row_of(i);
        let color = if *is_ref {
            ref_no += 1;
            REF_PALETTE[(ref_no - 1) % REF_PALETTE.len()]
        } else {
            bar_no += 1;
            PALETTE[(bar_no - 1) % PALETTE.len()]
        };
        match &item.value {
            Ok(v) if v.is_finite() => {
                if *is_ref {
                    // From the bottom of the panel to the middle of its row.
                    let line = plotters::element::DashedPathElement::new(
                        [
                            (*v, SegmentValue::Exact(0)),
                            (*v, SegmentValue::CenterOf(row)),
                        ],
                        DASH.0,
                        DASH.1,
                        color.stroke_width(2),
                    );
                    chart.draw_series([line]).map_err(chart_error)?;
                    let dot = Circle::new((*v, SegmentValue::CenterOf(row)), 4, color.filled());
                    chart.draw_series([dot]).map_err(chart_error)?;
                } else {
                    let mut rect = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(row)),
                            (*v, SegmentValue::Exact(row + 1)),
                        ],
                        color.filled(),
                    );
                    rect.set_margin(5, 5, 0, 0);
                    chart.draw_series([rect]).map_err(chart_error)?;
                }
                let at = (v.max(0.0), SegmentValue::CenterOf(row));
                chart
                    .draw_series([EmptyElement::at(at)
                        + Text::new(
                            short(*v),
                            (8, 0),
                            ("sans-serif", 14)
                                .into_font()
                                .style(FontStyle::Bold)
                                .color(if *is_ref { &color } else { &BLACK })
                                .pos(left_middle()),
                        )])
                    .map_err(chart_error)?;
            }
            other => {
                let word = match other {
                    Err(w) => w.clone(),
                    Ok(_) => "-".to_string(),
                };
                chart
                    .draw_series([EmptyElement::at((0.0, SegmentValue::CenterOf(row)))
                        + Text::new(
                            word,
                            (6, 0),
                            ("sans-serif", 14)
                                .into_font()
                                .style(FontStyle::Italic)
                                .color(&MUTED)
                                .pos(left_middle()),
                        )])
                    .map_err(chart_error)?;
            }
        }
    }
    Ok(())
}

/// A value with as many decimals as its size deserves.
fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Where a value sits: just right of its bar's end, centred on it.
fn left_middle() -> Pos {
    Pos::new(HPos::Left, VPos::Center)
}

/// A scale mark: no trailing zeros (`2`, `2.5`, not `2.00`).
fn scale(v: f64) -> String {
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// A plotters error as ours.
fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(values: &[(&str, std::result::Result<f64, String>)]) -> Vec<Bar> {
        values
            .iter()
            .map(|(l, v)| Bar {
                label: l.to_string(),
                value: v.clone(),
            })
            .collect()
    }

    fn panel(values: &[(&str, std::result::Result<f64, String>)]) -> Panel {
        Panel {
            title: "Server CPU per request".into(),
            unit: "µs".into(),
            bars: bars(values),
            refs: Vec::new(),
        }
    }

    #[test]
    fn baselines_are_dashed_lines_with_their_value() {
        let mut p = panel(&[("epoll", Ok(8.5)), ("thread", Ok(12.5))]);
        p.refs = bars(&[
            ("kernel floor", Ok(5.75)),
            ("c-uring", Err("n/a".into())),
            ("c-epoll", Ok(31.0)),
        ]);
        let svg = render("sub", &[p]).unwrap();
        for word in [
            "kernel floor",
            "5.75",
            "c-uring",
            "c-epoll",
            "31.0",
            "epoll",
            "8.50",
        ] {
            assert!(svg.contains(word), "{word} missing");
        }
        // Two dashed lines (one per finite reference), no bar drawn for them.
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            0,
            "plotters draws dashes as segments"
        );
        let dashes = svg.matches("<polyline").count() + svg.matches("<line").count();
        assert!(
            dashes >= 2 * 8,
            "the dashed lines are missing: {dashes} segments"
        );
    }

    #[test]
    fn every_model_and_value_is_in_the_svg() {
        let p = panel(&[
            ("thread", Ok(12.5)),
            ("iterative", Err("n/a".into())),
            ("epoll", Ok(3.25)),
        ]);
        let svg = render("sub", &[p.clone(), p.clone(), p.clone(), p]).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for word in ["thread", "iterative", "epoll", "12.5", "3.25", "n/a", "sub"] {
            assert!(svg.contains(word), "{word} missing");
        }
    }

    #[test]
    fn odd_values_do_not_break_the_drawing() {
        let p = panel(&[
            ("a", Ok(-2.0)),
            ("b", Ok(f64::NAN)),
            ("c", Ok(0.0)),
            ("d", Err("error".into())),
        ]);
        assert!(render("", &[p]).is_ok());
        assert!(render("", &[]).is_ok());
        assert!(render("", &[panel(&[])]).is_ok());
        let mut only_refs = panel(&[]);
        only_refs.refs = bars(&[("c-epoll", Ok(f64::INFINITY)), ("floor-2t", Ok(3.0))]);
        assert!(render("", &[only_refs]).is_ok());
    }
}
