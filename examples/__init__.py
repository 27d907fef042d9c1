"""Worked integrations of filewarden (see README, "The change feed")."""
