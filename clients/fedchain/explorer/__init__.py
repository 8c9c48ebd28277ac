"""The round explorer: an incremental index of FederatedTask activity on disk, web pages and a JSON API.

Imports chain and storage only (never device or aggregator): aggregation reports are read as JSON.
"""
