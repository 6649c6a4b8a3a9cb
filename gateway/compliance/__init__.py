"""Real-time interface compliance (DESIGN section 5): pure timelines, their SQL, and the API."""
