"""Drop DRF's plain API tokens (rest_framework.authtoken), replaced by knox's hashed,
expiring ones (CONTRACT §2).

Deliberately not carried over: they were stored in clear and never expired, and a knox
token cannot be made from one without keeping its secret in the database. Every old token
stops working; clients sign in again (POST /api/v1/auth/token/). The migration records of
`authtoken` go too, so that installing that app again would recreate its table.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0002_regeneration"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [
        migrations.RunSQL(
            sql=[
                "DROP TABLE IF EXISTS authtoken_token",
                "DELETE FROM django_migrations WHERE app = 'authtoken'",
            ],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
