def render(rows):
    return "\n".join(f"{name:<20} {value:>10}" for name, value in rows)
