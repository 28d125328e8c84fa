"""The Label Studio side: local server, labeling configs, push/pull, decision rules, quality."""
