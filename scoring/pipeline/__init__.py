"""The nightly job: the governed build, the scoring stages over one run folder, publishing, the lock."""
