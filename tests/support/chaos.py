"""The rows of the reliability table that `make chaos` prints: one per fault injected."""

ROWS: list[dict] = []
COLUMNS = ("fault", "sent", "accepted", "stored", "lost", "duplicated", "recovery_s")


def record(**row) -> None:
    ROWS.append(row)


def table() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in ROWS:
        cells = [f"{row.get(c):.1f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
