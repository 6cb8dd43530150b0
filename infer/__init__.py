"""digits-infer: classify folders of digit scans from the exported artifacts. Never imports torch itself."""
