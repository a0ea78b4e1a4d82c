"""D: reading the user's files, checking them, and turning them into batches."""
