"""Database: tables, engines and the dialect differences."""
