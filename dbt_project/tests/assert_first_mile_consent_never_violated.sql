-- The first mile's guarantee: no destination ever received an event whose required purpose was not granted at
-- that instant. Any row here fails the build.
select *
from {{ ref('consent_audit') }}
where path = 'first_mile'
  and delivered_without_consent > 0
