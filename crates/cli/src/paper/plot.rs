//! SVG plots for the paper report: CDFs of per-packet times on a logarithmic time axis
//! (the paper's Figures 10–12), drawn with plotters' SVG backend (no font libraries: text
//! is left to the viewer).
//!
//! This module only draws what it is given; it never measures.

use std::path::Path;

use plotters::prelude::*;

/// One line of a CDF plot: a name for the legend and (time µs, fraction) points, ascending.
pub struct CdfSeries {
    /// Legend text.
    pub name: String,
    /// (x in µs, cumulative fraction 0..=1), ascending in x.
    pub points: Vec<(f64, f64)>,
}

impl CdfSeries {
    /// A series from (ns, fraction) pairs such as `Latency::cdf` returns.
    pub fn from_ns(name: &str, cdf: &[(u64, f64)]) -> CdfSeries {
        CdfSeries {
            name: name.to_string(),
            points: cdf.iter().map(|&(ns, q)| (ns as f64 / 1e3, q)).collect(),
        }
    }
}

/// A vertical marker: a value the paper reports (drawn dashed, labelled "paper: …").
pub struct Marker {
    /// Label.
    pub label: String,
    /// Position on the time axis, µs.
    pub x_us: f64,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws a CDF plot of `series` (log-scale time axis in µs) with `markers` into `path`.
pub fn cdf_svg(path: &Path, title: &str, series: &[CdfSeries], markers: &[Marker]) -> Result<(), String> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(markers.iter().map(|m| m.x_us));
    let (lo, hi) = xs
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        return Err(format!("{title}: nothing to plot"));
    }
    // Whole decades around the data.
    let (lo, hi) =
        (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)));
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("per-packet time (µs, log scale)")
            .y_desc("CDF of packets")
            .x_label_formatter(&|x| if *x >= 1.0 { format!("{x:.0}") } else { format!("{x}") })
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        for m in markers {
            let line = (0..=20).map(|i| (m.x_us, f64::from(i) / 20.0));
            chart
                .draw_series(DashedLineSeries::new(line, 4, 4, BLACK.stroke_width(1)))?
                .label(format!("paper: {}", m.label))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(1)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("plot {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_plot_is_an_svg_with_every_series_and_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cdf.svg");
        let a = CdfSeries::from_ns("local", &[(500, 0.5), (2_000, 1.0)]);
        let b = CdfSeries::from_ns("externalized", &[(3_000, 0.5), (90_000, 1.0)]);
        cdf_svg(&path, "NAT", &[a, b], &[Marker { label: "3.5 µs".into(), x_us: 3.5 }]).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in ["NAT", "local", "externalized", "paper: 3.5 µs", "CDF of packets"] {
            assert!(svg.contains(text), "the plot lacks {text:?}");
        }
        assert!(cdf_svg(&dir.path().join("none.svg"), "empty", &[], &[]).is_err());
    }
}
