"""notify: routes anomaly alerts to PagerDuty and Slack; never loses an alert, never spams."""
