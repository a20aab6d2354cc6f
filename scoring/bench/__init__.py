"""Speed and memory benchmarks (`make bench`), measured and reported, never asserted in tests."""
