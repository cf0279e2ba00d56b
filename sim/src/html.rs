//! The report as one self-contained HTML page: the Markdown report turned into HTML (headings,
//! paragraphs, lists, tables, bold and code, which is all the report uses), with the charts'
//! SVG inline instead of linked, and no external asset (no script, font or style sheet).

use std::fmt::Write;

use crate::charts::Chart;

/// A small style sheet, inline, so that the page reads well printed or on a screen.
const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:2px 6px}\
td{text-align:right}td:first-child{text-align:left}th{background:#f0f0f0}code{background:#f4f4f4}\
svg{max-width:100%;height:auto}";

/// The page: `markdown` as HTML, with each `![title](<stem>-<suffix>.svg)` line replaced by
/// that chart's SVG.
pub fn page(title: &str, markdown: &str, charts: &[Chart], stem: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kuota-sim: {}</title>\
         <style>{STYLE}</style></head><body>\n",
        escape(title)
    );
    let mut table: Vec<&str> = Vec::new();
    let mut list = false;
    for line in markdown.lines() {
        if line.starts_with('|') {
            table.push(line);
            continue;
        }
        if !table.is_empty() {
            out.push_str(&render_table(&table));
            table.clear();
        }
        let item = line.strip_prefix("- ").or_else(|| line.strip_prefix("  - "));
        if list && item.is_none() {
            out.push_str("</ul>\n");
            list = false;
        }
        if let Some(item) = item {
            if !list {
                out.push_str("<ul>\n");
                list = true;
            }
            let _ = writeln!(out, "<li>{}</li>", inline(item));
        } else if let Some(chart) = chart_of(line, charts, stem) {
            let _ = writeln!(out, "<figure>{}</figure>", strip_xml_declaration(&chart.svg));
        } else if let Some(heading) = line.strip_prefix("### ") {
            let _ = writeln!(out, "<h3>{}</h3>", inline(heading));
        } else if let Some(heading) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", inline(heading));
        } else if let Some(heading) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", inline(heading));
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(line));
        }
    }
    if !table.is_empty() {
        out.push_str(&render_table(&table));
    }
    if list {
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

fn chart_of<'a>(line: &str, charts: &'a [Chart], stem: &str) -> Option<&'a Chart> {
    let target = line.strip_prefix("![")?.split_once("](")?.1.strip_suffix(')')?;
    charts.iter().find(|chart| target == format!("{stem}-{}.svg", chart.suffix))
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    }
}

fn render_table(rows: &[&str]) -> String {
    let cells = |row: &str| -> Vec<String> {
        row.trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .split('|')
            .map(|cell| inline(cell.trim()))
            .collect()
    };
    let mut out = String::from("<table>\n");
    for (index, row) in rows.iter().enumerate() {
        // The second row is Markdown's alignment line.
        if index == 1 && row.contains("---") {
            continue;
        }
        let tag = if index == 0 { "th" } else { "td" };
        out.push_str("<tr>");
        for cell in cells(row) {
            let _ = write!(out, "<{tag}>{cell}</{tag}>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Escapes `text` and turns `**bold**`, `*emphasis*` and `` `code` `` into HTML; links become
/// their text (the page has everything inline).
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = without_links(&escape(text));
    for (marker, open, close) in
        [("**", "<strong>", "</strong>"), ("`", "<code>", "</code>"), ("*", "<em>", "</em>")]
    {
        let mut converted = String::new();
        let mut inside = false;
        for (index, part) in rest.split(marker).enumerate() {
            if index > 0 {
                converted.push_str(if inside { close } else { open });
                inside = !inside;
            }
            converted.push_str(part);
        }
        // An unpaired marker is left as it was.
        rest = if inside { rest } else { converted };
    }
    out.push_str(&rest);
    out
}

/// `[text](target)` becomes `text`.
fn without_links(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some((label, after)) = rest[open + 1..].split_once("](") else { break };
        let Some(close) = after.find(')') else { break };
        out.push_str(&rest[..open]);
        out.push_str(label);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_lists_and_emphasis_become_html() {
        let page =
            page("t", "# Title\n\n- **bold** and `code`\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n", &[], "r");
        assert!(page.contains("<h1>Title</h1>"));
        assert!(page.contains("<li><strong>bold</strong> and <code>code</code></li>"));
        assert!(page.contains("<tr><th>a</th><th>b</th></tr>"));
        assert!(page.contains("<tr><td>1</td><td>2</td></tr>"));
        assert!(!page.contains("---"));
    }

    #[test]
    fn text_is_escaped_and_links_become_their_text() {
        assert_eq!(inline("a < b & c"), "a &lt; b &amp; c");
        assert_eq!(inline("as CSV: [r.csv](r.csv)."), "as CSV: r.csv.");
    }
}
