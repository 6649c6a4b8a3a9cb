"""Safety Guard edge agent: cameras, smoke detectors and exit-blockage detection at a site (issue 3)."""
