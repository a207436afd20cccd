import os, sys, requests

KEY = os.environ["OPENWEATHER_API_KEY"]

def forecast(city):
    r = requests.get("https://api.openweathermap.org/data/2.5/forecast", params={"q": city}, headers={"x-api-key": KEY}, timeout=10)
    r.raise_for_status()
    return r.json()

if __name__ == "__main__":
    print(forecast(sys.argv[1]))
