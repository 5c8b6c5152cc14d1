from dataclasses import dataclass


@dataclass
class User:
    name: str
    email: str

    def domain(self):
        return self.email.split("@", 1)[1]


def by_domain(users):
    out = {}
    for user in users:
        out.setdefault(user.domain(), []).append(user)
    return out
