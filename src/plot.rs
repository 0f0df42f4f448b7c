//! `vizflow plot`: figures of a directory's partials, merged exactly by
//! [`crate::reduce`]: a heatmap of a metric over two group columns, or lines of metrics
//! over one. PNG and SVG are drawn with plotters and the font embedded in the binary
//! (`assets/fonts`), so a figure looks the same on every machine.
//!
//! Axes are in real units for bin columns (bin index x width), returns in basis points,
//! signed metrics on a diverging scale centred on zero with a colour bar, cells with
//! fewer rows than `--min-count` greyed, and a title that names the pipeline (its
//! output directory), the metric and the dates.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::partials::Bin;
use crate::reduce::{ReduceError, ReduceOptions, Reduced, reduce};

/// Which figure.
#[derive(Clone, Debug)]
pub enum Figure {
    /// A metric (`z`) over two group columns, one cell per group.
    Heatmap {
        /// The column across.
        x: String,
        /// The column up.
        y: String,
        /// The metric.
        z: String,
        /// Cells with fewer rows are greyed.
        min_count: i64,
    },
    /// Metrics over one group column, a line per metric (and per value of `color`).
    Line {
        /// The column across.
        x: String,
        /// The metrics.
        y: Vec<String>,
        /// A group column with a line per value.
        color: Option<String>,
        /// Points of groups with fewer rows are left out.
        min_count: i64,
    },
}

/// What to plot.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// The figure.
    pub figure: Figure,
    /// The dates (as `vizflow reduce --dates`).
    pub dates: Option<String>,
    /// A condition over the groups (as `vizflow reduce --where`).
    pub filter: Option<String>,
    /// Also merge the provisional partials of open dates (as `vizflow reduce --live`);
    /// the subtitle names them.
    pub live: bool,
    /// The file: `.png`, `.svg` or `.html` (the SVG figure in a page that shows each
    /// cell's or point's value and count under the pointer; self-contained).
    pub output: PathBuf,
}

/// Why a figure could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The partials could not be merged.
    #[error(transparent)]
    Reduce(#[from] ReduceError),
    /// A metric or column the partials do not have.
    #[error("no metric '{name}' in the partials; their metrics: {available}")]
    NoMetric {
        /// The name asked for.
        name: String,
        /// The metrics there are.
        available: String,
    },
    /// An output file of another kind.
    #[error("{}: write a .png, .svg or .html file", path.display())]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// Nothing to draw.
    #[error("no group to plot: the dates and --where leave none")]
    Empty,
    /// Drawing or writing failed.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What was drawn.
#[derive(Debug)]
pub struct Plotted {
    /// The groups drawn.
    pub groups: usize,
    /// The dates merged.
    pub dates: usize,
}

const SIZE: (u32, u32) = (1100, 720);
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font as `sans-serif` (once).
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Merges the partials in `dir` as the figure needs and draws it into
/// `options.output` (written to a temporary file, then renamed).
pub fn plot(dir: &Path, options: &PlotOptions) -> Result<Plotted, PlotError> {
    let by: Vec<String> = match &options.figure {
        Figure::Heatmap { x, y, .. } => vec![x.clone(), y.clone()],
        Figure::Line { x, color, .. } => std::iter::once(x.clone()).chain(color.clone()).collect(),
    };
    let reduced = reduce(
        dir,
        &ReduceOptions {
            dates: options.dates.clone(),
            by: Some(by),
            filter: options.filter.clone(),
            live: options.live,
            ..ReduceOptions::default()
        },
    )?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "partials".to_owned());
    draw(&reduced, &name, options)
}

/// Draws the figure of `options` from merged partials (or any table of groups with the
/// figure's columns) into `options.output`, titled after `name`; `options.dates`,
/// `filter` and `live` are not used here (they select what `reduced` merged).
pub fn draw(reduced: &Reduced, name: &str, options: &PlotOptions) -> Result<Plotted, PlotError> {
    register_font();
    let metrics: Vec<&String> = match &options.figure {
        Figure::Heatmap { z, .. } => vec![z],
        Figure::Line { y, .. } => y.iter().collect(),
    };
    for metric in metrics {
        if reduced.table.column_by_name(metric).is_none() {
            let available: Vec<&str> = (reduced.layout.metrics.iter())
                .map(|(n, _)| n.as_str())
                .collect();
            return Err(PlotError::NoMetric {
                name: metric.clone(),
                available: available.join(", "),
            });
        }
    }
    if reduced.table.num_rows() == 0 {
        return Err(PlotError::Empty);
    }
    let format = match options.output.extension().and_then(|e| e.to_str()) {
        Some("svg") => Format::Svg,
        Some("png") => Format::Png,
        Some("html") => Format::Html,
        _ => {
            return Err(PlotError::Format {
                path: options.output.clone(),
            });
        }
    };
    let dates = match (reduced.dates.first(), reduced.dates.last()) {
        (Some(first), Some(last)) if first != last => format!(
            "{} to {}, {} dates",
            first.format("%Y-%m-%d"),
            last.format("%Y-%m-%d"),
            reduced.dates.len()
        ),
        (Some(first), _) => first.format("%Y-%m-%d").to_string(),
        _ => String::new(),
    };
    let dates = match reduced.provisional.as_slice() {
        [] => dates,
        open => {
            let open: Vec<String> = open
                .iter()
                .map(|d| d.format("%Y-%m-%d").to_string())
                .collect();
            format!("{dates} (provisional: {})", open.join(", "))
        }
    };
    let draw_error = |message: String| PlotError::Draw {
        path: options.output.clone(),
        message,
    };
    let title = match &options.figure {
        Figure::Heatmap { x, y, z, .. } => format!("{name}: {z} by {x} and {y}"),
        Figure::Line { x, y, .. } => format!("{name}: {} by {x}", y.join(", ")),
    };
    let figure = Drawing {
        reduced,
        title: &title,
        subtitle: &dates,
        hovers: std::cell::RefCell::new(Vec::new()),
    };
    let temporary = temporary_path(&options.output);
    let result = match format {
        Format::Svg => {
            let area = SVGBackend::new(&temporary, SIZE).into_drawing_area();
            (figure.draw(&options.figure, &area))
                .and_then(|()| area.present().map_err(|e| e.to_string()))
        }
        Format::Png => {
            let area = BitMapBackend::new(&temporary, SIZE).into_drawing_area();
            (figure.draw(&options.figure, &area))
                .and_then(|()| area.present().map_err(|e| e.to_string()))
        }
        Format::Html => {
            let mut svg = String::new();
            let drawn = {
                let area = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
                (figure.draw(&options.figure, &area))
                    .and_then(|()| area.present().map_err(|e| e.to_string()))
            };
            drawn.and_then(|()| {
                let page = html_page(&title, &svg, &figure.hovers.borrow(), reduced);
                std::fs::write(&temporary, page).map_err(|e| e.to_string())
            })
        }
    };
    if let Err(message) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(draw_error(message));
    }
    std::fs::rename(&temporary, &options.output).map_err(|e| draw_error(e.to_string()))?;
    Ok(Plotted {
        groups: reduced.table.num_rows(),
        dates: reduced.dates.len(),
    })
}

/// A temporary file beside `path`, of the same extension (the PNG encoder goes by it).
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{}.{name}", std::process::id()))
}

enum Format {
    Png,
    Svg,
    Html,
}

struct Drawing<'a> {
    reduced: &'a Reduced,
    title: &'a str,
    subtitle: &'a str,
    /// What the page shows under the pointer: each cell's or point's place (pixels)
    /// and text.
    hovers: std::cell::RefCell<Vec<Hover>>,
}

/// A place of the figure and what it holds.
struct Hover {
    /// Left, top, right, bottom, in pixels.
    rect: (i32, i32, i32, i32),
    text: String,
}

/// The SVG figure in a self-contained page: the places of [`Hover`] as transparent
/// shapes over it, a few lines of script that show their text under the pointer, and
/// the merged rows as JSON. Nothing is loaded from anywhere.
fn html_page(title: &str, svg: &str, hovers: &[Hover], reduced: &Reduced) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let shapes: String = hovers
        .iter()
        .map(|h| {
            let (l, t, r, b) = h.rect;
            format!(
                "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" data-text=\"{}\"/>\n",
                (r - l).max(1),
                (b - t).max(1),
                escape(&h.text)
            )
        })
        .collect();
    let rows = crate::reduce::json_rows(&reduced.table)
        .to_string()
        .replace("</", "<\\/");
    let title = escape(title);
    let (w, h) = SIZE;
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", sans-serif; margin: 16px; }}
#figure {{ position: relative; width: {w}px; height: {h}px; }}
#figure > svg {{ position: absolute; left: 0; top: 0; }}
#hits rect {{ fill: transparent; cursor: crosshair; }}
#hits rect:hover {{ stroke: #000; stroke-width: 1.5; }}
#tip {{ position: absolute; display: none; pointer-events: none; background: #fff;
  border: 1px solid #888; padding: 4px 8px; font-size: 13px; white-space: nowrap;
  box-shadow: 1px 1px 4px rgba(0,0,0,.2); }}
</style></head>
<body>
<div id="figure">
{svg}
<svg id="hits" width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">
{shapes}</svg>
<div id="tip"></div>
</div>
<script type="application/json" id="rows">{rows}</script>
<script>
const tip = document.getElementById("tip");
const figure = document.getElementById("figure");
document.querySelectorAll("#hits rect").forEach((shape) => {{
  shape.addEventListener("mousemove", (event) => {{
    const box = figure.getBoundingClientRect();
    tip.textContent = shape.dataset.text;
    tip.style.display = "block";
    tip.style.left = (event.clientX - box.left + 14) + "px";
    tip.style.top = (event.clientY - box.top + 14) + "px";
  }});
  shape.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}});
</script>
</body></html>
"##
    )
}

/// A group column as positions on an axis: numbers where they are numbers (bins in the
/// source's units), places in key order otherwise; and how to label a position.
struct Axis {
    name: String,
    positions: Vec<f64>,
    /// Distinct values in order with their labels (for categories and dates).
    labels: Vec<(f64, String)>,
    numeric: bool,
}

impl Axis {
    fn of(table: &RecordBatch, column: &str, bins: &[Bin]) -> Axis {
        let values = table.column_by_name(column).expect("a reduced key column");
        let bin = bins.iter().find(|b| b.column == column);
        let name = match bin {
            Some(bin) => bin.source.clone(),
            None => column.to_owned(),
        };
        if let Some(days) = values.as_primitive_opt::<Date32Type>() {
            let positions: Vec<f64> = days.iter().map(|d| d.map_or(f64::NAN, f64::from)).collect();
            let mut distinct: Vec<i32> = days.iter().flatten().collect();
            distinct.sort_unstable();
            distinct.dedup();
            let labels = (distinct.into_iter())
                .filter_map(|d| {
                    let date = crate::calendar::date_of_date32(d)?;
                    Some((f64::from(d), date.format("%Y-%m-%d").to_string()))
                })
                .collect();
            return Axis {
                name,
                positions,
                labels,
                numeric: true,
            };
        }
        if values.data_type().is_integer() {
            // A bin index in its source's units (bin x width).
            let width = bin.map_or(1.0, |b| b.width);
            let ints = arrow::compute::cast(values, &DataType::Float64).expect("integers cast");
            let positions = ints
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map_or(f64::NAN, |v| v * width))
                .collect();
            return Axis {
                name,
                positions,
                labels: Vec::new(),
                numeric: true,
            };
        }
        // Categories: their places in key order.
        let text = arrow::compute::cast(values, &DataType::Utf8).expect("keys cast to text");
        let text = text.as_string::<i32>();
        let mut distinct: Vec<String> = Vec::new();
        let positions = (0..text.len())
            .map(|row| {
                let value = if text.is_null(row) {
                    "null".to_owned()
                } else {
                    text.value(row).to_owned()
                };
                let at = distinct
                    .iter()
                    .position(|d| *d == value)
                    .unwrap_or_else(|| {
                        distinct.push(value);
                        distinct.len() - 1
                    });
                at as f64
            })
            .collect();
        let labels = distinct
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v))
            .collect();
        Axis {
            name,
            positions,
            labels,
            numeric: false,
        }
    }

    /// The distinct positions, in order.
    fn distinct(&self) -> Vec<f64> {
        let mut values: Vec<f64> = self
            .positions
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        values
    }

    fn label(&self, position: f64) -> String {
        match self
            .labels
            .iter()
            .find(|(p, _)| (*p - position).abs() < 1e-9)
        {
            Some((_, label)) => label.clone(),
            None => number(position),
        }
    }
}

/// A number as a person reads it on an axis: 0.0012 as 1.2e-3, 250 as 250.
fn number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    if value.abs() < 1e-2 || value.abs() >= 1e6 {
        let text = format!("{value:.2e}");
        // 1.20e-3 -> 1.2e-3
        match text.split_once('e') {
            Some((mantissa, exponent)) => {
                let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
                format!("{mantissa}e{exponent}")
            }
            None => text,
        }
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A metric's values, in basis points when it is a return.
fn metric_values(table: &RecordBatch, metric: &str) -> (Vec<Option<f64>>, String) {
    let values = table.column_by_name(metric).expect("checked");
    let values = arrow::compute::cast(values, &DataType::Float64).expect("a metric is numeric");
    let values = values.as_primitive::<Float64Type>();
    let (scale, unit) = if metric.contains("return") {
        (1e4, format!("{metric} (bp)"))
    } else {
        (1.0, metric.to_owned())
    };
    let values = values
        .iter()
        .map(|v| v.filter(|v| v.is_finite()).map(|v| v * scale))
        .collect();
    (values, unit)
}

fn counts(table: &RecordBatch) -> Vec<i64> {
    match table
        .column_by_name("count()")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
    {
        Some(counts) => counts.values().to_vec(),
        None => vec![i64::MAX; table.num_rows()],
    }
}

/// The colour of `value`: on a diverging blue-white-red scale centred on zero when the
/// values have both signs, else on viridis from the smallest to the largest.
struct Scale {
    low: f64,
    high: f64,
    diverging: bool,
}

impl Scale {
    fn of(values: &[Option<f64>]) -> Scale {
        let finite = values.iter().flatten().copied();
        let (low, high) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (low, high) = if low.is_finite() {
            (low, high)
        } else {
            (0.0, 1.0)
        };
        if low < 0.0 && high > 0.0 {
            let limit = low.abs().max(high);
            Scale {
                low: -limit,
                high: limit,
                diverging: true,
            }
        } else {
            Scale {
                low,
                high: if high > low { high } else { low + 1.0 },
                diverging: false,
            }
        }
    }

    fn color(&self, value: f64) -> RGBColor {
        let t = ((value - self.low) / (self.high - self.low)).clamp(0.0, 1.0);
        if !self.diverging {
            let c = ViridisRGB::get_color(t);
            return RGBColor(c.0, c.1, c.2);
        }
        // Blue (#2166ac) through white to red (#b2182b).
        let (from, to, s) = if t < 0.5 {
            ((33.0, 102.0, 172.0), (247.0, 247.0, 247.0), t * 2.0)
        } else {
            ((247.0, 247.0, 247.0), (178.0, 24.0, 43.0), (t - 0.5) * 2.0)
        };
        let mix = |a: f64, b: f64| (a + (b - a) * s).round() as u8;
        RGBColor(mix(from.0, to.0), mix(from.1, to.1), mix(from.2, to.2))
    }
}

const GREY: RGBColor = RGBColor(217, 217, 217);

/// Line colours that stay apart on white and for most colour-blind readers (Okabe-Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
];

impl Drawing<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        figure: &Figure,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), String> {
        let e = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
        area.fill(&WHITE).map_err(e)?;
        let (header, body) = area.split_vertically(70);
        header
            .draw(&Text::new(
                self.title.to_owned(),
                (20, 14),
                ("sans-serif", 24).into_font().color(&BLACK),
            ))
            .map_err(e)?;
        header
            .draw(&Text::new(
                self.subtitle.to_owned(),
                (20, 44),
                ("sans-serif", 16).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(e)?;
        match figure {
            Figure::Heatmap { x, y, z, min_count } => self.heatmap(&body, x, y, z, *min_count),
            Figure::Line {
                x,
                y,
                color,
                min_count,
            } => self.lines(&body, x, y, color.as_deref(), *min_count),
        }
    }

    fn heatmap<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x: &str,
        y: &str,
        z: &str,
        min_count: i64,
    ) -> Result<(), String> {
        let e = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
        let table = &self.reduced.table;
        let bins = &self.reduced.layout.bins;
        let (xs, ys) = (Axis::of(table, x, bins), Axis::of(table, y, bins));
        let (values, unit) = metric_values(table, z);
        let counts = counts(table);
        let shown: Vec<Option<f64>> = (values.iter().zip(&counts))
            .map(|(v, c)| v.filter(|_| *c >= min_count))
            .collect();
        let scale = Scale::of(&shown);
        let (plot, bar) = area.split_horizontally(SIZE.0 - 150);
        // Each cell spans its distinct position to the next (categories: 1 wide).
        let (x_cells, y_cells) = (xs.distinct(), ys.distinct());
        let step = |cells: &[f64]| {
            cells
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::INFINITY, f64::min)
                .min(if cells.len() > 1 { f64::INFINITY } else { 1.0 })
        };
        let (dx, dy) = (step(&x_cells), step(&y_cells));
        let range =
            |cells: &[f64], d: f64| (cells[0] - d / 2.0)..(cells[cells.len() - 1] + d / 2.0);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(range(&x_cells, dx), range(&y_cells, dy))
            .map_err(e)?;
        let label_x = |v: &f64| xs.label(*v);
        let label_y = |v: &f64| ys.label(*v);
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh()
            .x_desc(xs.name.clone())
            .y_desc(ys.name.clone())
            .x_label_formatter(&label_x)
            .y_label_formatter(&label_y)
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17));
        if !xs.numeric {
            mesh.x_labels(x_cells.len());
        }
        if !ys.numeric {
            mesh.y_labels(y_cells.len());
        }
        mesh.draw().map_err(e)?;
        let z_name = unit.clone();
        for row in 0..table.num_rows() {
            let (cx, cy) = (xs.positions[row], ys.positions[row]);
            if !(cx.is_finite() && cy.is_finite()) {
                continue;
            }
            let (l, t) = chart.backend_coord(&(cx - dx / 2.0, cy + dy / 2.0));
            let (r, b) = chart.backend_coord(&(cx + dx / 2.0, cy - dy / 2.0));
            let value = values[row].map_or("null".to_owned(), number);
            let text = format!(
                "{} = {}, {} = {}: {z_name} = {value} ({} rows)",
                xs.name,
                xs.label(cx),
                ys.name,
                ys.label(cy),
                counts[row]
            );
            self.hovers.borrow_mut().push(Hover {
                rect: (l, t, r, b),
                text,
            });
        }
        // A combination of the axes without a group has no rows: grey, as too few.
        let empty = (x_cells.iter()).flat_map(|cx| {
            y_cells.iter().map(move |cy| {
                let corners = [
                    (cx - dx / 2.0, cy - dy / 2.0),
                    (cx + dx / 2.0, cy + dy / 2.0),
                ];
                Rectangle::new(corners, GREY.filled())
            })
        });
        chart.draw_series(empty).map_err(e)?;
        let cells = (0..table.num_rows()).filter_map(|row| {
            let (cx, cy) = (xs.positions[row], ys.positions[row]);
            if !(cx.is_finite() && cy.is_finite()) {
                return None;
            }
            let color = match shown[row] {
                Some(v) => scale.color(v),
                None => GREY,
            };
            let corners = [
                (cx - dx / 2.0, cy - dy / 2.0),
                (cx + dx / 2.0, cy + dy / 2.0),
            ];
            Some(Rectangle::new(corners, color.filled()))
        });
        chart.draw_series(cells).map_err(e)?;
        self.color_bar(&bar, &scale, &unit, min_count)
    }

    fn color_bar<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        scale: &Scale,
        unit: &str,
        min_count: i64,
    ) -> Result<(), String> {
        let e = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
        let mut chart = ChartBuilder::on(area)
            .margin_top(12)
            .margin_bottom(67)
            .margin_right(70)
            .y_label_area_size(0)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0, scale.low..scale.high)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc(unit.to_owned())
            .y_label_formatter(&|v: &f64| number(*v))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(e)?;
        let steps = 200;
        let strips = (0..steps).map(|i| {
            let (a, b) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
            let (lo, hi) = (
                scale.low + a * (scale.high - scale.low),
                scale.low + b * (scale.high - scale.low),
            );
            Rectangle::new(
                [(0.0, lo), (1.0, hi)],
                scale.color((lo + hi) / 2.0).filled(),
            )
        });
        chart.draw_series(strips).map_err(e)?;
        {
            let (w, h) = area.dim_in_pixel();
            let note = match min_count > 1 {
                true => format!("grey: under {min_count} rows"),
                false => "grey: no rows".to_owned(),
            };
            area.draw(&Text::new(
                note,
                (4, h as i32 - 40),
                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(e)?;
            let _ = w;
        }
        Ok(())
    }

    fn lines<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        x: &str,
        metrics: &[String],
        color: Option<&str>,
        min_count: i64,
    ) -> Result<(), String> {
        let e = |error: DrawingAreaErrorKind<DB::ErrorType>| error.to_string();
        let table = &self.reduced.table;
        let bins = &self.reduced.layout.bins;
        let xs = Axis::of(table, x, bins);
        let groups: Vec<(String, Vec<usize>)> = match color {
            Some(column) => {
                let axis = Axis::of(table, column, bins);
                (axis.distinct().into_iter())
                    .map(|p| {
                        let rows = (0..table.num_rows())
                            .filter(|r| axis.positions[*r] == p)
                            .collect();
                        (format!("{column} = {}", axis.label(p)), rows)
                    })
                    .collect()
            }
            None => vec![(String::new(), (0..table.num_rows()).collect())],
        };
        let counts = counts(table);
        let mut pending: Vec<(f64, f64, String)> = Vec::new();
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        let mut units = Vec::new();
        for metric in metrics {
            let (values, unit) = metric_values(table, metric);
            units.push(unit.clone());
            for (group, rows) in &groups {
                let mut points: Vec<(f64, f64)> = (rows.iter())
                    .filter(|r| counts[**r] >= min_count)
                    .filter_map(|r| Some((xs.positions[*r], values[*r]?)))
                    .filter(|(x, _)| x.is_finite())
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                for row in rows.iter().filter(|r| counts[**r] >= min_count) {
                    if let (Some(v), true) = (values[*row], xs.positions[*row].is_finite()) {
                        let text = format!(
                            "{} = {}{}: {unit} = {} ({} rows)",
                            xs.name,
                            xs.label(xs.positions[*row]),
                            if group.is_empty() {
                                String::new()
                            } else {
                                format!(", {group}")
                            },
                            number(v),
                            counts[*row]
                        );
                        pending.push((xs.positions[*row], v, text));
                    }
                }
                let name = match group.is_empty() {
                    true => unit.clone(),
                    false => format!("{unit}, {group}"),
                };
                series.push((name, points));
            }
        }
        let all = series.iter().flat_map(|(_, p)| p.iter());
        let (x_lo, x_hi, y_lo, y_hi) = all.fold(
            (
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ),
            |(a, b, c, d), (x, y)| (a.min(*x), b.max(*x), c.min(*y), d.max(*y)),
        );
        if !x_lo.is_finite() {
            return Err("no value to draw".to_owned());
        }
        let pad = |lo: f64, hi: f64| if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
        let (px, py) = (pad(x_lo, x_hi), pad(y_lo, y_hi));
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(55)
            .y_label_area_size(90)
            .build_cartesian_2d((x_lo - px)..(x_hi + px), (y_lo - py)..(y_hi + py))
            .map_err(e)?;
        let label_x = |v: &f64| xs.label(*v);
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_desc(xs.name.clone())
            .y_desc(units.join(", "))
            .x_label_formatter(&label_x)
            .y_label_formatter(&|v: &f64| number(*v))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(e)?;
        for (x, y, text) in pending {
            let (px, py) = chart.backend_coord(&(x, y));
            let rect = (px - 5, py - 5, px + 5, py + 5);
            self.hovers.borrow_mut().push(Hover { rect, text });
        }
        if y_lo < 0.0 && y_hi > 0.0 {
            let zero = LineSeries::new(
                [(x_lo - px, 0.0), (x_hi + px, 0.0)],
                RGBColor(150, 150, 150),
            );
            chart.draw_series(zero).map_err(e)?;
        }
        for (i, (name, points)) in series.into_iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = ShapeStyle::from(&color).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(e)?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        Ok(())
    }
}
