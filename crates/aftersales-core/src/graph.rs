//! Renders a workflow as a Mermaid flowchart or a Graphviz digraph: steps, conditional
//! branches with their conditions, waits with their timeouts, parallel branches, and
//! compensation edges drawn dashed.

use std::fmt::Write as _;

use crate::model::*;

/// Output format for [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Mermaid `flowchart TD`.
    Mermaid,
    /// Graphviz `digraph`.
    Dot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    Normal,
    Failure,
    Timeout,
    Compensation,
}

struct Edge {
    from: String,
    to: String,
    label: Option<String>,
    kind: EdgeKind,
}

struct Graph {
    nodes: Vec<(String, String, &'static str)>,
    edges: Vec<Edge>,
    clusters: Vec<(String, String, Vec<String>)>,
}

fn label_of(step: &Step) -> (String, &'static str) {
    let id = &step.id.value;
    match &step.kind {
        StepKind::Task(t) => {
            let mut l = format!("{id}\\n{}", t.action.value);
            if t.pivot.as_ref().is_some_and(|p| p.value) {
                l.push_str("\\n(pivot)");
            }
            (l, "task")
        }
        StepKind::Wait(w) => {
            let what = match w.kind {
                WaitKind::Signal => "signal",
                WaitKind::Event => "event",
            };
            let timeout = w
                .timeout
                .as_ref()
                .map(|t| format!("\\ntimeout {t}"))
                .unwrap_or_default();
            (
                format!("{id}\\nwait {what} {}{timeout}", w.name.value),
                "wait",
            )
        }
        StepKind::Sleep(Sleep::For(d)) => (format!("{id}\\nsleep {d}"), "wait"),
        StepKind::Sleep(Sleep::Until(_)) => (format!("{id}\\nsleep until"), "wait"),
        StepKind::Choice => (id.clone(), "choice"),
        StepKind::Parallel(p) => (
            format!("{id}\\nparallel join {}", p.join.as_str()),
            "parallel",
        ),
        StepKind::Call(c) => (format!("{id}\\ncall {}", c.workflow.value), "call"),
        StepKind::End(e) => (format!("{id}\\n{}", e.status.value.as_str()), "end"),
    }
}

fn build(wf: &Workflow) -> Graph {
    let mut g = Graph {
        nodes: Vec::new(),
        edges: Vec::new(),
        clusters: Vec::new(),
    };
    add_steps(wf, &wf.steps, None, &mut g);
    g
}

fn add_steps(wf: &Workflow, steps: &[Step], join_next: Option<&str>, g: &mut Graph) {
    for (i, s) in steps.iter().enumerate() {
        let id = s.id.value.clone();
        let (label, shape) = label_of(s);
        g.nodes.push((id.clone(), label, shape));
        let following = steps.get(i + 1).map(|n| n.id.value.clone());
        let mut normal_targets: Vec<(String, Option<String>)> = Vec::new();
        match &s.next {
            Next::To(t) => normal_targets.push((t.value.clone(), None)),
            Next::Cases(cases) => {
                for c in cases {
                    let label = c
                        .when
                        .as_ref()
                        .map_or_else(|| "otherwise".to_owned(), |w| w.source.clone());
                    normal_targets.push((c.goto.value.clone(), Some(label)));
                }
            }
            Next::Implicit => {
                if !matches!(s.kind, StepKind::End(_)) {
                    match (&following, join_next) {
                        (Some(f), _) => normal_targets.push((f.clone(), None)),
                        (None, Some(j)) => {
                            normal_targets.push((j.to_owned(), Some("branch done".to_owned())))
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        if let StepKind::Parallel(p) = &s.kind {
            // Edges go into each branch; the branches' exits go to the join target.
            let after = match &s.next {
                Next::To(t) => Some(t.value.clone()),
                Next::Implicit => following.clone(),
                Next::Cases(_) => None,
            };
            let join_node = format!("{id}__join");
            g.nodes.push((
                join_node.clone(),
                format!("join {}", p.join.as_str()),
                "join",
            ));
            for b in &p.branches {
                if let Some(first) = b.steps.first() {
                    g.edges.push(Edge {
                        from: id.clone(),
                        to: first.id.value.clone(),
                        label: Some(b.id.value.clone()),
                        kind: EdgeKind::Normal,
                    });
                }
                g.clusters.push((
                    format!("{id}_{}", b.id.value),
                    format!("branch {}", b.id.value),
                    b.steps.iter().map(|s| s.id.value.clone()).collect(),
                ));
                add_steps(wf, &b.steps, Some(&join_node), g);
            }
            if let Some(a) = after {
                g.edges.push(Edge {
                    from: join_node,
                    to: a,
                    label: None,
                    kind: EdgeKind::Normal,
                });
            }
            if let Some(f) = &p.on_failure {
                g.edges.push(Edge {
                    from: id.clone(),
                    to: f.value.clone(),
                    label: Some("on failure".to_owned()),
                    kind: EdgeKind::Failure,
                });
            }
            continue;
        }
        for (to, label) in normal_targets {
            g.edges.push(Edge {
                from: id.clone(),
                to,
                label,
                kind: EdgeKind::Normal,
            });
        }
        match &s.kind {
            StepKind::Task(t) => {
                if let Some(f) = &t.on_failure {
                    g.edges.push(Edge {
                        from: id.clone(),
                        to: f.value.clone(),
                        label: Some("on failure".to_owned()),
                        kind: EdgeKind::Failure,
                    });
                }
                if let Some(c) = &t.compensate {
                    let comp = format!("{id}__undo");
                    g.nodes.push((
                        comp.clone(),
                        format!("undo {id}\\n{}", c.action.value),
                        "compensation",
                    ));
                    g.edges.push(Edge {
                        from: id.clone(),
                        to: comp,
                        label: Some("compensate".to_owned()),
                        kind: EdgeKind::Compensation,
                    });
                }
            }
            StepKind::Call(c) => {
                if let Some(f) = &c.on_failure {
                    g.edges.push(Edge {
                        from: id.clone(),
                        to: f.value.clone(),
                        label: Some("on failure".to_owned()),
                        kind: EdgeKind::Failure,
                    });
                }
            }
            StepKind::Wait(w) => {
                if let Some(t) = &w.on_timeout {
                    let label = w
                        .timeout
                        .as_ref()
                        .map_or_else(|| "timeout".to_owned(), |d| format!("after {d}"));
                    g.edges.push(Edge {
                        from: id.clone(),
                        to: t.value.clone(),
                        label: Some(label),
                        kind: EdgeKind::Timeout,
                    });
                }
            }
            _ => {}
        }
    }
    let _ = wf;
}

/// Node ids get a prefix so that a step called `end` or `graph` cannot collide with a
/// Mermaid keyword.
fn mermaid_id(id: &str) -> String {
    format!("s_{}", id.replace('.', "_"))
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;").replace("\\n", "<br/>")
}

/// Renders the workflow in the chosen format.
pub fn render(wf: &Workflow, format: Format) -> String {
    let g = build(wf);
    match format {
        Format::Mermaid => render_mermaid(wf, &g),
        Format::Dot => render_dot(wf, &g),
    }
}

fn render_mermaid(wf: &Workflow, g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "---\ntitle: {}\n---", wf.key());
    out.push_str("flowchart TD\n");
    if let Some(start) = wf.start_id() {
        let _ = writeln!(out, "    start__((start)) --> {}", mermaid_id(start));
    }
    let in_cluster: Vec<&String> = g.clusters.iter().flat_map(|(_, _, ids)| ids).collect();
    let node_line = |id: &str, label: &str, shape: &str| -> String {
        let id = mermaid_id(id);
        let text = mermaid_text(label);
        match shape {
            "wait" => format!("{id}[/\"{text}\"/]"),
            "choice" => format!("{id}{{\"{text}\"}}"),
            "end" => format!("{id}([\"{text}\"])"),
            "parallel" | "join" => format!("{id}[[\"{text}\"]]"),
            "call" => format!("{id}[[\"{text}\"]]"),
            "compensation" => format!("{id}>\"{text}\"]"),
            _ => format!("{id}[\"{text}\"]"),
        }
    };
    for (id, label, shape) in &g.nodes {
        if !in_cluster.contains(&id) {
            let _ = writeln!(out, "    {}", node_line(id, label, shape));
        }
    }
    for (cid, title, ids) in &g.clusters {
        let _ = writeln!(
            out,
            "    subgraph {} [\"{}\"]",
            mermaid_id(cid),
            mermaid_text(title)
        );
        for id in ids {
            if let Some((_, label, shape)) = g.nodes.iter().find(|(n, _, _)| n == id) {
                let _ = writeln!(out, "        {}", node_line(id, label, shape));
            }
        }
        out.push_str("    end\n");
    }
    for e in &g.edges {
        let arrow = match e.kind {
            EdgeKind::Normal => "-->",
            EdgeKind::Failure | EdgeKind::Timeout => "-.->",
            EdgeKind::Compensation => "-.-",
        };
        match &e.label {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "    {} {arrow}|\"{}\"| {}",
                    mermaid_id(&e.from),
                    mermaid_text(l),
                    mermaid_id(&e.to)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "    {} {arrow} {}",
                    mermaid_id(&e.from),
                    mermaid_id(&e.to)
                );
            }
        }
    }
    out.push_str("    classDef compensation stroke-dasharray: 5 5,fill:#fff4e6\n");
    out.push_str("    classDef finish fill:#e6f4ea\n");
    for (id, _, shape) in &g.nodes {
        let class = match *shape {
            "compensation" => "compensation",
            "end" => "finish",
            _ => continue,
        };
        let _ = writeln!(out, "    class {} {class}", mermaid_id(id));
    }
    out
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("\\\\n", "\\n")
}

fn render_dot(wf: &Workflow, g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_text(&wf.key()));
    out.push_str("    rankdir=TB;\n    node [fontname=\"Helvetica\", fontsize=10];\n    edge [fontname=\"Helvetica\", fontsize=9];\n");
    if let Some(start) = wf.start_id() {
        let _ = writeln!(
            out,
            "    \"__start__\" [shape=circle, label=\"start\"];\n    \"__start__\" -> \"{start}\";"
        );
    }
    let in_cluster: Vec<&String> = g.clusters.iter().flat_map(|(_, _, ids)| ids).collect();
    let attrs = |shape: &str| match shape {
        "wait" => "shape=parallelogram",
        "choice" => "shape=diamond",
        "end" => "shape=doublecircle",
        "parallel" | "join" => "shape=box, peripheries=2",
        "call" => "shape=component",
        "compensation" => "shape=box, style=dashed",
        _ => "shape=box, style=rounded",
    };
    for (id, label, shape) in &g.nodes {
        if !in_cluster.contains(&id) {
            let _ = writeln!(
                out,
                "    \"{id}\" [{}, label=\"{}\"];",
                attrs(shape),
                dot_text(label)
            );
        }
    }
    for (cid, title, ids) in &g.clusters {
        let _ = writeln!(
            out,
            "    subgraph \"cluster_{cid}\" {{\n        label=\"{}\";\n        style=dotted;",
            dot_text(title)
        );
        for id in ids {
            if let Some((_, label, shape)) = g.nodes.iter().find(|(n, _, _)| n == id) {
                let _ = writeln!(
                    out,
                    "        \"{id}\" [{}, label=\"{}\"];",
                    attrs(shape),
                    dot_text(label)
                );
            }
        }
        out.push_str("    }\n");
    }
    for e in &g.edges {
        let style = match e.kind {
            EdgeKind::Normal => "",
            EdgeKind::Failure => ", color=red, style=dashed",
            EdgeKind::Timeout => ", color=orange, style=dashed",
            EdgeKind::Compensation => ", color=gray40, style=dashed, arrowhead=empty",
        };
        let label = e
            .label
            .as_ref()
            .map(|l| format!("label=\"{}\"", dot_text(l)))
            .unwrap_or_default();
        let _ = writeln!(out, "    \"{}\" -> \"{}\" [{label}{style}];", e.from, e.to);
    }
    out.push_str("}\n");
    out
}
