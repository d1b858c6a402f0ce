"""Living cohorts: refresh on new events with stable ids and names, changes and drift, and forgetting users."""
