def count(cursor):
    cursor.execute("select count(*) from t")
    return cursor.fetchone()[0]
