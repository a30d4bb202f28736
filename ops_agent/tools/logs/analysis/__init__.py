"""Analysis: template mining, anomaly detection, root-cause signatures."""
