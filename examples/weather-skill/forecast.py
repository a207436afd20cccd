"""Prints a three-day forecast from Open-Meteo for the given coordinates."""
import json
import sys
import urllib.request


def main() -> None:
    lat, lon = float(sys.argv[1]), float(sys.argv[2])
    url = (
        "https://api.open-meteo.com/v1/forecast"
        f"?latitude={lat}&longitude={lon}&daily=temperature_2m_max,temperature_2m_min&forecast_days=3"
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        print(json.dumps(json.load(response)["daily"], indent=2))


if __name__ == "__main__":
    main()
