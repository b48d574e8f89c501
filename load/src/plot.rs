//! The sweep's plot: presence deliveries per second (x) against push latency p50 and
//! p99 (y, log scale) as the offered change rate rises, one pair of lines per server
//! binary, with the p99 limit drawn across. SVG only (plotters' SVG backend without
//! font support: text is written as SVG `<text>` elements, sized by an estimate).

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::median;

/// One step's point.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// Presence deliveries per second during the step's window.
    pub deliveries_per_s: f64,
    /// Push latency median, ms.
    pub p50_ms: f64,
    /// Push latency 99th percentile, ms.
    pub p99_ms: f64,
}

/// One server binary's steps, in the order they ran (rising rate).
#[derive(Clone, Debug)]
pub struct Series {
    /// The server's name in the legend.
    pub label: String,
    /// Its points.
    pub points: Vec<Point>,
}

/// An offered rate and its steps' deliveries/s, p50 and p99 (ms).
type RateSteps = (f64, Vec<[f64; 3]>);

/// The series of a churn JSON report (`figures.steps`): one per server, in the order
/// the servers first appear, one point per offered rate (the medians of its steps).
pub fn series_of_report(report: &serde_json::Value) -> Result<Vec<Series>> {
    let steps = report["figures"]["steps"]
        .as_array()
        .ok_or_else(|| anyhow!("no figures.steps"))?;
    let mut out: Vec<(String, Vec<RateSteps>)> = Vec::new();
    for s in steps {
        let (Some(server), Some(rate), Some(d), Some(p50), Some(p99), Some(n)) = (
            s["server"].as_str(),
            s["rate_offered"].as_f64(),
            s["deliveries_per_s"].as_f64(),
            s["latency_ms"]["p50"].as_f64(),
            s["latency_ms"]["p99"].as_f64(),
            s["latency_ms"]["n"].as_u64(),
        ) else {
            return Err(anyhow!("a step without its server, rate or latency: {s}"));
        };
        if n == 0 {
            continue;
        }
        let k = match out.iter().position(|(l, _)| l == server) {
            Some(k) => k,
            None => {
                out.push((server.to_string(), Vec::new()));
                out.len() - 1
            }
        };
        let rates = &mut out[k].1;
        match rates.iter_mut().find(|(r, _)| *r == rate) {
            Some((_, v)) => v.push([d, p50, p99]),
            None => rates.push((rate, vec![[d, p50, p99]])),
        }
    }
    Ok(out
        .into_iter()
        .map(|(label, mut rates)| {
            rates.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label,
                points: rates
                    .into_iter()
                    .map(|(_, v)| Point {
                        deliveries_per_s: median(v.iter().map(|x| x[0]).collect()),
                        p50_ms: median(v.iter().map(|x| x[1]).collect()),
                        p99_ms: median(v.iter().map(|x| x[2]).collect()),
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Colours of the servers' lines, in order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Writes the plot of `series` to `path` (SVG), with a horizontal line at `limit_ms`.
pub fn write_svg(path: &Path, series: &[Series], limit_ms: f64) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let points = series.iter().flat_map(|s| s.points.iter());
    let x_max = points
        .clone()
        .map(|p| p.deliveries_per_s)
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let lat = points
        .flat_map(|p| [p.p50_ms, p.p99_ms])
        .filter(|v| *v > 0.0);
    let y_min = lat.clone().fold(limit_ms, f64::min).max(0.001) / 2.0;
    let y_max = lat.fold(limit_ms, f64::max) * 2.0;

    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "precall churn: push latency against presence deliveries/s",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("presence deliveries per second (offered rate rising)")
        .y_desc("push latency, ms (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, limit_ms), (x_max, limit_ms)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label(format!("p99 limit {limit_ms} ms"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], BLACK.mix(0.5)));
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let p99: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.deliveries_per_s, p.p99_ms.max(y_min)))
            .collect();
        let p50: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.deliveries_per_s, p.p50_ms.max(y_min)))
            .collect();
        chart
            .draw_series(LineSeries::new(p99.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(format!("{} p99", s.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(2)));
        chart
            .draw_series(p99.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(DashedLineSeries::new(
                p50.clone(),
                8,
                5,
                colour.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(format!("{} p50", s.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], colour.mix(0.6)));
        chart
            .draw_series(
                p50.iter()
                    .map(|&p| Circle::new(p, 3, colour.stroke_width(1))),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_both_servers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        let pts = |k: f64| {
            (1..=3)
                .map(|i| Point {
                    deliveries_per_s: 10_000.0 * f64::from(i) * k,
                    p50_ms: 0.5 * f64::from(i),
                    p99_ms: 10.0 * f64::from(i * i),
                })
                .collect()
        };
        let series = [
            Series {
                label: "before".into(),
                points: pts(1.0),
            },
            Series {
                label: "after".into(),
                points: pts(2.0),
            },
        ];
        write_svg(&path, &series, 50.0).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("before p99") && svg.contains("after p50"));
        // Empty series still make a valid (empty) plot.
        write_svg(&path, &[], 50.0).unwrap();

        // From a report: medians per rate, servers in order of appearance.
        let step = |server: &str, rate: f64, d: f64, p99: f64| {
            serde_json::json!({"server": server, "rate_offered": rate, "deliveries_per_s": d,
                "latency_ms": {"p50": 1.0, "p99": p99, "n": 10}})
        };
        let report = serde_json::json!({"figures": {"steps": [
            step("b", 100.0, 10.0, 5.0), step("a", 100.0, 12.0, 7.0),
            step("a", 100.0, 14.0, 9.0), step("b", 100.0, 11.0, 6.0),
            step("b", 200.0, 20.0, 60.0),
        ]}});
        let s = series_of_report(&report).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].label.as_str(), s[0].points.len()), ("b", 2));
        assert_eq!(s[1].points[0].deliveries_per_s, 13.0);
        assert_eq!(s[1].points[0].p99_ms, 8.0);
        assert!(series_of_report(&serde_json::json!({})).is_err());
    }
}
