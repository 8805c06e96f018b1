"""Order saga: charge, reserve, ship, with compensation in reverse on failure."""
