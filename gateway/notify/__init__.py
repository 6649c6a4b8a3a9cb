"""The notifier (DESIGN section 5a): alert changes from the database to people's phones, in steps."""
