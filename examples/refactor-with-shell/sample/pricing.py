def price_with_tax(price, rate=0.2):
    return round(price * (1 + rate), 2)


def discount(price, percent):
    return price * (100 - percent) / 100
