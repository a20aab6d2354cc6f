"""Product search on the shop's governed data: query normalisation, the scoring run's search stages
(lexical index, learned ranker, head queries) and the engine that answers a query live or from the
published head results."""
