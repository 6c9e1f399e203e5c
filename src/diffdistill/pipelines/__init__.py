"""One Kedro pipeline per phase; nodes are thin adapters over the algorithm layers."""
