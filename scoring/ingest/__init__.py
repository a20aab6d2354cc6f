"""Raw data in: the demo shop generator, the raw-file contract check, and the step that prepares both."""
