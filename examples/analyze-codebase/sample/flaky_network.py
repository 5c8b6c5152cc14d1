import time


def fetch_with_retry(fetch, attempts=3):
    for n in range(attempts):
        try:
            return fetch()
        except OSError:
            time.sleep(2**n)
    raise RuntimeError("gave up")
