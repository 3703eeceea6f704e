"""Small command-line tools: sample data, shard inspection."""
