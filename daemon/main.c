#include <stdio.h>
int main(void)
{
    puts("druid-syncd " DSYNC_VERSION);
    return 0;
}
