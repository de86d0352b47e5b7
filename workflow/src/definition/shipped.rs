//! The workflow templates shipped in `workflows/`, compiled into the binary.

/// `(name, YAML text)` of every shipped workflow template.
pub fn shipped() -> &'static [(&'static str, &'static str)] {
    SHIPPED
}

const SHIPPED: &[(&str, &str)] = &[
    (
        "research_to_docs",
        include_str!("../../../workflows/research_to_docs.yaml"),
    ),
    (
        "research_to_slack",
        include_str!("../../../workflows/research_to_slack.yaml"),
    ),
    (
        "research_pipeline",
        include_str!("../../../workflows/research_pipeline.yaml"),
    ),
    (
        "meeting_to_tasks",
        include_str!("../../../workflows/meeting_to_tasks.yaml"),
    ),
    (
        "research_brief",
        include_str!("../../../workflows/research_brief.yaml"),
    ),
    (
        "linkedin_post",
        include_str!("../../../workflows/linkedin_post.yaml"),
    ),
];
