"""Monitoring shared by every target: scrape config, alert rules, dashboards."""
