from sample.pricing import price_with_tax


class Cart:
    def __init__(self):
        self.lines = []

    def add(self, name, price, count=1):
        self.lines.append((name, price, count))

    def total(self, rate=0.2):
        return sum(price_with_tax(price, rate) * count for _, price, count in self.lines)
