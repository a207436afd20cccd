const config = {
  apiKey: "k7Qz9XvB2mWp4Ls8Ty6Rn3Hd1Jf5Gc0Ea",
  domain: "mg.example.com",
};
module.exports = config;
