"""`agevision serve`: the HTTP API and web page (`server`), its video jobs (`jobs`), the live
stream (`stream`) and the batching of estimates across requests (`batching`)."""
