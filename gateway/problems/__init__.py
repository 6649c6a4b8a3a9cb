"""The problem list (问题清单, issue 6 point 2): pure rules, their SQL, and the API's queries."""
