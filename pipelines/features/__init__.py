"""Features: silver.interactions and gold.user_features (RFM, windows, engagement, cart,
send hour, lifecycle) with declarative segments."""
