"""The one client library (XCCOS over SIP) and `pchat chat`; imports core/, never shards/."""
