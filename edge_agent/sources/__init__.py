"""Where the edge agent's inputs come from: cameras (:mod:`edge_agent.sources.camera`, OpenCV)
and smoke detectors (:mod:`edge_agent.sources.smoke`).

Nothing is imported here on purpose: importing the smoke adapters must not load OpenCV (an
optional extra), so import the module you need.
"""
