"""Writes a generated sample with the shape of Druid's wikiticker quickstart data
(newline-delimited JSON, one day of edits) for the demo when ../shared/data is absent.

Usage: /usr/bin/python3 gen_sample.py OUT.json [ROWS]
"""
import json
import random
import sys

CHANNELS = ["#en.wikipedia", "#de.wikipedia", "#fr.wikipedia", "#ja.wikipedia", "#vi.wikipedia"]
PAGES = ["Jeremy Corbyn", "Wikipedia:Vandalismusmeldung", "Rallicula", "Peremptory norm",
         "Talk:Oswald Tilghman", "Bailando 2015"]
CITIES = [(None, None, None, None, None), ("Auburn", "AU", "Australia", "NSW", "New South Wales"),
          ("Buenos Aires", "AR", "Argentina", "C", "Buenos Aires")]


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 39244
    rnd = random.Random(20150912)
    start = 1442018818771  # 2015-09-12T00:46:58.771Z, the first edit of the real sample
    span = 1442102399200 - start
    times = sorted(start + rnd.randrange(span) for _ in range(n))
    with open(out, "w", encoding="utf-8") as f:
        for t in times:
            city, ciso, cname, riso, rname = rnd.choice(CITIES)
            added = rnd.choice([0, 0, 3, 17, 36, 120, 1500])
            deleted = rnd.choice([0, 0, 0, 5, 44])
            anon = city is not None
            row = {
                "time": "%s.%03dZ" % (
                    __import__("time").strftime("%Y-%m-%dT%H:%M:%S",
                                                __import__("time").gmtime(t // 1000)), t % 1000),
                "channel": rnd.choice(CHANNELS), "cityName": city,
                "comment": rnd.choice(["added project", "fix typo", "/* Scores */", "Robot: ✓"]),
                "countryIsoCode": ciso, "countryName": cname, "isAnonymous": anon,
                "isMinor": rnd.random() < 0.3, "isNew": rnd.random() < 0.1,
                "isRobot": rnd.random() < 0.2, "isUnpatrolled": rnd.random() < 0.15,
                "metroCode": None, "namespace": rnd.choice(["Main", "Talk", "User"]),
                "page": rnd.choice(PAGES), "regionIsoCode": riso, "regionName": rname,
                "user": "60.225.66.142" if anon else rnd.choice(["GELongstreet", "PereBot"]),
                "delta": added - deleted, "added": added, "deleted": deleted,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
