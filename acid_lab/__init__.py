"""ACID Lab: see what a database transaction promises, on a real PostgreSQL."""
