"""Operations made of several host and data steps (upgrade, rollback)."""
