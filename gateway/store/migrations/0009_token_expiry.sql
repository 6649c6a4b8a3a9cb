-- API tokens may expire (issue 13 point 5): a token for a contractor or a drill ends by itself.
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
